"""Data for training and evaluation: `.data` files and classifier datasets
(`classifier`), YOLO-format detection data (`detection`), arrays (`arrays`),
augmentation (`augment`) and image decoding, resizing and letterboxing (`images`)."""
