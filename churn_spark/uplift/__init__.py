"""Uplift: the effect of a retention contact per account (campaign data, meta-learners, honest metrics)."""
