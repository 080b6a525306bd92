"""The persona: how a user writes and who is in their life, learned from their own messages.

`service.PersonaService` is what the server holds (rebuilds, cached prompts, per-turn examples); `build`
runs one build; `profile`, `style`, `places`, `sample` and `prompt` are the sans-I/O parts; `lexicon` the
offline language resources; `store` the SQL.
"""
