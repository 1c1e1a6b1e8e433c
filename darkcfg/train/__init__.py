"""Training jobs: Darknet's loop with checkpoints, progress and the loss chart
(`loop`), the classifier and detector set-ups (`classifier`, `detector`), the chart
(`chart`)."""
