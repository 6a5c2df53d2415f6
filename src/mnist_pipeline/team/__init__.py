"""Infrastructure for working as a team: a PostgreSQL cluster of the project's own and the shared MLflow
tracking server on it (`mnist-pipeline server`). No stage imports this package."""
