//! Statements sent together on one connection, their answers read in
//! order (tokio-postgres sends each as it is first polled, without waiting
//! for the one before).
//!
//! Once one of them fails, PostgreSQL answers every later one of the same
//! transaction with "current transaction is aborted" (25P02). `try_join!`
//! returns the first error it happens to poll, which may be one of those:
//! the cause (a deadlock or a serialization failure the transaction is run
//! again for, a contact erased meanwhile) was lost. Joined with
//! `tokio::join!` and then [`InOrder::in_order`], every statement runs to
//! its answer and the first error in statement order is the one returned.

/// A tuple of results, as `tokio::join!` returns them.
pub(super) trait InOrder {
    type Output;
    type Error;
    /// Every value, or the error of the first statement that failed.
    fn in_order(self) -> Result<Self::Output, Self::Error>;
}

macro_rules! in_order {
    ($($t:ident $i:tt),+) => {
        impl<$($t,)+ E> InOrder for ($(Result<$t, E>,)+) {
            type Output = ($($t,)+);
            type Error = E;
            fn in_order(self) -> Result<Self::Output, E> {
                Ok(($(self.$i?,)+))
            }
        }
    };
}

in_order!(A 0, B 1);
in_order!(A 0, B 1, C 2);
in_order!(A 0, B 1, C 2, D 3);
in_order!(A 0, B 1, C 2, D 3, F 4);
in_order!(A 0, B 1, C 2, D 3, F 4, G 5);

#[cfg(test)]
mod tests {
    use super::InOrder;

    type Answer = Result<u8, &'static str>;

    #[test]
    fn the_first_error_in_statement_order_wins() {
        let r: (Answer, Answer, Answer) = (Ok(1), Err("deadlock"), Err("aborted"));
        assert_eq!(r.in_order(), Err("deadlock"));
        let r: (Answer, Answer) = (Ok(1), Ok(2));
        assert_eq!(r.in_order(), Ok((1, 2)));
    }
}
