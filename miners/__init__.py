"""Article readers, crawler, figure panel splitting and scale-bar reading (no torch, no database)."""
