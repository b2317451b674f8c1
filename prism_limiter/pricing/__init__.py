"""Pricing: model names and prices, provider usage objects, token estimates."""
