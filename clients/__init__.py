"""Clients of the server: the Gradio demo and OpenAI SDK examples (HTTP only)."""
