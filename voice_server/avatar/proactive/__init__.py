"""Proactive engagement: the avatar reaches out (greetings, check-ins, "on this day", milestones).

See `scheduler` for how messages are planned and sent at most once, `rules` for when each kind is due,
`messages` for their wording, `hub` and `notifications` for delivery.
"""
