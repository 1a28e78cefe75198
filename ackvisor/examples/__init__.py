"""Example applications built on ackvisor (the seed's superheroes app)."""
