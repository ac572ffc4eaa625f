"""The Docker adapter, the only code that talks to Docker, and component images."""
