"""What the avatar remembers about a user: extraction (`extraction`, pure), reconciliation and recall policy
(`policy`, pure), the ``memories`` table (`store`, SQL only) and the service that runs them (`service`)."""
