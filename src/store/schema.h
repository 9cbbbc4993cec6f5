/* schema.h - the memory store's tables, as versioned migrations for each database. */
#ifndef CLARA_STORE_SCHEMA_H
#define CLARA_STORE_SCHEMA_H

#include "store/db.h"

/* The schema version this binary writes. A store at a higher version is refused (a newer
 * clara-server made it); a lower one is migrated forward in one transaction. */
#define STORE_SCHEMA_VERSION 1

/* Brings the database to STORE_SCHEMA_VERSION: creates the tables in an empty database, applies
 * the missing migrations, refuses a newer schema or a database that is not a clara store. Safe
 * when several processes open the same database at once (they serialise on the write lock). */
store_code store_schema_migrate(db *d, store_err *err);

/* The schema version recorded in the database (0 when it has no clara tables). */
store_code store_schema_version(db *d, int *version, store_err *err);

#endif
