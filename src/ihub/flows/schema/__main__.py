"""`python -m ihub.flows.schema`: regenerate flow-v1.json from the models."""

from ihub.flows.schema import main

main()
