"""Fine-tuning the VLA: data pipeline (LeRobotDataset v3.0 -> action chunks in the model's action
space + a frame cache at the model's input resolution), augmentation, the training loop with
checkpoints and exact resume, LoRA through peft, data parallelism through torchrun."""
