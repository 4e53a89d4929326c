"""BOOM: the Benchmark of Observability Metrics, evaluated the way the published leaderboard does."""
