"""Console sign-in: passwords, one-time sign-in links and browser sessions."""
