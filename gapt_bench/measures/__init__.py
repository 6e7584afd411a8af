"""What the suite measures on a model, defined once and shared by training, tasks and `gapt-bench eval`.

entropy        matrix-based entropy (MBE) of hidden states: the one home of the formula
hidden_states  the decoder blocks of any transformers causal LM and their outputs before the final norm
alignment      cosine between the CE and MBE gradients (a training diagnostic)
memorization   code lengths, unintended memorization against a reference, extraction, deduplication
membership     membership inference: loss-threshold attack, calibrated threshold, F1 and AUC
"""
