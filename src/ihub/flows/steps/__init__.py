"""Step types: one module per type (its pydantic model and its handler), registered in `registry.BUILTIN`.

The engine (ihub.flows.engine) walks the steps, checkpoints and restores them; a handler does the step's own
work through a `StepContext`. The flow format (ihub.flows.definition) validates steps as a tagged union on
`type` over the registered models, and the JSON schema is generated from the same models.
"""
