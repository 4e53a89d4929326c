"""The forecasting HTTP service: `bentoml serve serve.service:TotoService`; see docs/serving.md."""
