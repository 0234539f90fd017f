"""Configs of the reference classifier (core/classifier)."""
