"""How statements format timestamps: by PostgreSQL, as the Node service wrote them."""

# `inserted_at` columns hold UTC wall-clock time with whole seconds (timestamp(0)).
ISO_UTC = """to_char({column}, 'YYYY-MM-DD"T"HH24:MI:SS".000Z"')"""
