"""Everything MLflow, and nothing else imports mlflow: `store` (which store, opening it, its errors),
`runs` (training runs, params, metrics, artifacts), `logged_models` (Keras models in and out of MLflow)
and `registry` (registered versions and the champion alias)."""
