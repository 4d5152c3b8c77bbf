import { ProblemDetailsException } from "@kms/nestjs";

/** 400 problem+json naming the field and the rule it breaks. */
export function invalidInput(detail: string): ProblemDetailsException {
  return new ProblemDetailsException({
    type: "https://kms.dev/problems/demo/invalid-input",
    title: "Invalid input",
    status: 400,
    detail,
  });
}

export function notFound(detail: string): ProblemDetailsException {
  return new ProblemDetailsException({
    type: "https://kms.dev/problems/demo/not-found",
    title: "Not found",
    status: 404,
    detail,
  });
}

export function conflict(detail: string): ProblemDetailsException {
  return new ProblemDetailsException({
    type: "https://kms.dev/problems/demo/conflict",
    title: "Conflict",
    status: 409,
    detail,
  });
}
