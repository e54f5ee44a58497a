/* SQLite's C API for the node's durable key store. */
#include <sqlite3.h>
/* SQLITE_TRANSIENT is a macro over a cast that Swift cannot import. */
static inline void (*cshim_sqlite_transient(void))(void *) { return SQLITE_TRANSIENT; }
