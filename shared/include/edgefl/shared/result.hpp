#pragma once
// Result<T>: a value or an Error. Functions that handle input from outside
// return one instead of throwing, so a bad message never unwinds through a
// caller that did not ask for exceptions.

#include <cassert>
#include <type_traits>
#include <utility>
#include <variant>

#include "edgefl/shared/error.hpp"

namespace edgefl {

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : state_(std::in_place_index<0>, std::move(value)) {}     // NOLINT
  Result(Error error) : state_(std::in_place_index<1>, std::move(error)) {  // NOLINT
    assert(std::get<1>(state_).code != Code::Ok);
  }

  bool ok() const { return state_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & {
    assert(ok());
    return std::get<0>(state_);
  }
  const T& value() const& {
    assert(ok());
    return std::get<0>(state_);
  }
  T&& value() && {
    assert(ok());
    return std::get<0>(std::move(state_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const Error& error() const {
    assert(!ok());
    return std::get<1>(state_);
  }
  Code code() const { return ok() ? Code::Ok : error().code; }

 private:
  std::variant<T, Error> state_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)) {}  // NOLINT

  bool ok() const { return error_.code == Code::Ok; }
  explicit operator bool() const { return ok(); }
  const Error& error() const {
    assert(!ok());
    return error_;
  }
  Code code() const { return error_.code; }

 private:
  Error error_;
};

using Status = Result<void>;

inline Error makeError(Code code, std::string detail) {
  return Error{code, std::move(detail)};
}

}  // namespace edgefl

// Propagates an error from an expression returning a Result. Each use gets
// its own variable name, so uses nested in lambdas do not shadow each other.
#define EDGEFL_TRY_CONCAT_(a, b) a##b
#define EDGEFL_TRY_CONCAT(a, b) EDGEFL_TRY_CONCAT_(a, b)
#define EDGEFL_TRY_IMPL(expr, name)      \
  do {                                   \
    auto&& name = (expr);                \
    if (!name.ok()) return name.error(); \
  } while (false)
#define EDGEFL_TRY(expr) EDGEFL_TRY_IMPL(expr, EDGEFL_TRY_CONCAT(edgefl_try_, __COUNTER__))
