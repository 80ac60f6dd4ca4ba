"""One typed schema per artifact that crosses a stage boundary (`base.Artifact` subclasses), one module per
producing stage: written by the producer, read by every consumer through the same class."""
