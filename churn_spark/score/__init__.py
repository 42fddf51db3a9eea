"""Batch scoring: probabilities, risk deciles, reason codes, drift and the budget-constrained target list."""
