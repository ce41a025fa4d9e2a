"""Supervised fine-tuning: chat traces tokenised with an assistant-only loss mask (`data`), trained by the RL
trainer's parts with a likelihood objective (`trainer`)."""
