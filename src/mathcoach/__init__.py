"""mathcoach: the reference AI service shipped with flightcheck (math questions + sympy)."""

__version__ = "0.1.0"
