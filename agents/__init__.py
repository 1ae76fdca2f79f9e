"""Heuristic and learned policies with Stable-Baselines3's ``predict()`` signature (later issue)."""
