"""Training: the loop, optimizer and schedule, checkpoints, seeding and devices."""
