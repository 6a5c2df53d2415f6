"""Everything MLflow, and the only package that imports mlflow (no Keras, no Hydra: callers pass plain
values): `store` (which store, opening it, its errors), `params` (a config as dotted params), `runs` (a
training run's lifecycle, runs by id), `epochs` (per-epoch metrics), `artifacts`, `parents` (a study's or a
sweep's parent run), `datasets` (the splits as dataset inputs), `logged_models` (models in and out of MLflow),
`registry` (registered versions and the champion alias) and `stale` (runs whose process died)."""
