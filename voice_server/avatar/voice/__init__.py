"""The person's own voice: enrollment clips, the voice-match search over Kokoro packs, and the chosen voice."""
