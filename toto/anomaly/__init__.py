"""Anomaly detection from the predictive distribution (docs/anomaly.md): each value's exact predictive CDF
(`distributions`), which causal passes score which value (`passes`), the calibration of surprises on the series' own
past (`calibration`), and the scores and the alert budget (`detector`). No model here: `ForecastPipeline` runs the
passes (`toto.inference.next_value`) and calls these."""
