"""Every differentiable op of the framework, as Function classes (forward + backward)."""
