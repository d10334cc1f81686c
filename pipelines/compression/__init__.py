"""Stage 4, compression: pruning to physically smaller layers, a short distillation fine-tune
and int8; reads a student model folder and writes the compressed students."""
