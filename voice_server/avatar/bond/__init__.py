"""The bond between a user and their avatar: the state and its rule (`model`, pure), sentiment of the user's
words (`sentiment`) and the table plus its background worker (`service`)."""
