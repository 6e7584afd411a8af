"""Evaluating a saved model: `gapt-bench eval` loads any transformers causal LM safely, measures it (CE, bits per
byte, MBE per layer, memorization and membership inference) and writes an evaluation record to the same store as
training runs."""
