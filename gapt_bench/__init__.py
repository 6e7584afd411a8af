"""gapt_bench: does compressing representations improve generalization, and how much can a model memorize?"""
__version__ = "0.1.0"
