"""Service assembly: channels and the gateway that runs them."""
