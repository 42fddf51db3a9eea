"""Point-in-time churn features (DESIGN.md §5): one module per family, the catalogue, and the job."""
