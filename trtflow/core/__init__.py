"""Core: errors, validated config, manifests and atomic writes, the stage runner, CPU facts."""
