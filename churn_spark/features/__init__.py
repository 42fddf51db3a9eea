"""Point-in-time churn features (docs/churn-definition.md): one module per family, the catalogue, and the job."""
