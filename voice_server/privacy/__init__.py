"""The user's privacy rights as features of their own: the export of everything stored about them (`export`).

Above the features it reads (it imports them, they never import it) and beside the routes that serve it
(`voice_server.api.privacy_routes`).
"""
