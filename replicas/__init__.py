"""The replica side: telemetry contracts, engine models, SimEngine, Serve deployment."""
