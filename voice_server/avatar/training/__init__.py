"""Training the avatar's own model on the person's messages, and measuring whether it writes more like them."""
