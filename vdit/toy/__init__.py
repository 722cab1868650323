"""The toy world: its vocabulary (spec), clip renderer, eval prompts, caption expander and the judge that scores videos against their prompts."""
