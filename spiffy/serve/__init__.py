"""`spiffy serve`: OpenAI-compatible serving of a dLLM or an AR target (FastAPI + uvicorn)."""
