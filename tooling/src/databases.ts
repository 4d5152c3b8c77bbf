/**
 * Which real databases the tests may use. On CI `.ci/run` sets KMS_REQUIRE_DATABASES=1 and the
 * URLs, so a missing server fails the run; on a laptop without them the suites skip and say
 * which variable to set.
 */
export type DatabaseKind = "postgres" | "mariadb" | "redis";

const VARIABLES: Record<DatabaseKind, string> = {
  postgres: "KMS_TEST_POSTGRES_URL",
  mariadb: "KMS_TEST_MARIADB_URL",
  redis: "KMS_TEST_REDIS_URL",
};

const EXAMPLES: Record<DatabaseKind, string> = {
  postgres: "postgres://postgres@127.0.0.1:5432/postgres",
  mariadb: "mysql://root@127.0.0.1:3306/test",
  redis: "redis://127.0.0.1:6379",
};

export interface DatabaseTarget {
  readonly url: string | undefined;
  /** Why the suite is skipped, or undefined when it runs. */
  readonly skipReason: string | undefined;
}

export function databaseTarget(kind: DatabaseKind): DatabaseTarget {
  const variable = VARIABLES[kind];
  const url = process.env[variable];
  if (url !== undefined && url !== "") return { url, skipReason: undefined };
  if (process.env.KMS_REQUIRE_DATABASES === "1") {
    throw new Error(
      `${variable} is not set but KMS_REQUIRE_DATABASES=1: the ${kind} tests are mandatory here`,
    );
  }
  const reason = `${kind} tests skipped: set ${variable} (e.g. ${EXAMPLES[kind]}) to run them`;
  console.warn(reason);
  return { url: undefined, skipReason: reason };
}
