"""The operator: thin kopf handlers over a pure two-phase-commit state machine."""
