// Imported first by the PostgreSQL suite: entities.ts reads it when the classes are defined.
process.env.KMS_TYPEORM_BYTES_TYPE = "bytea";
