"""Policies: torch and transformers live here and in nothing below it."""
