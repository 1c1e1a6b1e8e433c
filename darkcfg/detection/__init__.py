"""Detectors at work: boxes from a network's heads with NMS (`detect`), mAP (`evaluate`),
boxes drawn on images (`draw`)."""
