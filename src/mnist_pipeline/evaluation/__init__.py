"""Scoring and choosing (NumPy only): metrics, the ensemble, the leaderboard's ranking, the champion gate's
decision, and the evaluate stage's files that the report reads."""
