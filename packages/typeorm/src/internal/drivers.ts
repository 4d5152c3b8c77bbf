/** TypeORM's drivers for MySQL and MariaDB: one server family, with its collations and locking. */
export const MYSQL_FAMILY: ReadonlySet<string> = new Set(["mysql", "mariadb", "aurora-mysql"]);
