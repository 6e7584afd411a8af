"""GAPT and MBE in a user's own training loop: a `transformers.Trainer` subclass whose loss follows the phase gate."""
